"""Text generation: from a prompt to text, on top of the model's token-level decoding.

- `config`: `GenerationConfig`, every setting of a generation, validated once when built;
- `stream`: the entry points, `stream_chunks` (text chunks per sample, as they come) and
  `complete` (the finished `Completion`s);
- `stops`: stop strings and what is held back from the stream (UTF-8, partial stops);
- `script`: script mode for plays and screenplays (speakers, headings, next-speaker stop);
- `chat`: a conversation turn by turn, for `gptscratch chat`.

A prompt goes down the layers once: encoded here, decoded into token ids by
`model.decoding` / `model.beam_search`, which call the GPT; text comes back up as chunks.
"""
