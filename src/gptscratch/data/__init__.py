"""From raw text to batches of token ids: the first stage of gptscratch.

`sources` reads text, `tokenizers` turns it into ids, `prepare` writes them once to sharded,
memory-mapped token files (`token_files`), and `batches` draws random (B, T) training batches.
Nothing is imported here on purpose: import the submodule you need.
"""
