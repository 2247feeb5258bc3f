"""Text generation: from a prompt to text, on top of the model's token-level decoding.

`stream` (`stream_chunks`, `complete`) encodes the prompts and decodes them as a
`config.GenerationConfig` says, through `engine` (sampled rows) or `model.beam_search`; text
comes back as chunks, ended by stop strings or `script`'s next-speaker stop. `chat` keeps a
conversation across turns.
"""
