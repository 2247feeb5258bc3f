"""From raw text to batches of token ids: the first stage of gptscratch.

`sources` reads text (the built-in Shakespeare corpus, files, folders, globs or a Hugging Face
dataset), `tokenizers` turns it into ids (char, GPT-2 or a trained byte-level BPE), `prepare`
tokenizes a corpus once into memory-mapped `train.bin` / `val.bin` files, and `batches` draws
random (B, T) training batches from them. `cache` says where downloaded and derived files live.

Nothing is imported here on purpose: import the submodule you need.
"""
