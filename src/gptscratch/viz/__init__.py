"""Pictures of a model and its training, written as PNG files.

One module per kind of picture: `curves` (loss, learning rate and speed from metrics.jsonl),
`attention` (every layer's and head's attention weights for a prompt), `distribution` (the
next-token probabilities and what temperature / top-k / top-p keep), `embeddings` (token
embeddings in 2D, position-embedding similarity) and `logit_lens` (what each layer would
predict). Each has a function that computes the data as plain arrays, which tests and notebooks
can check, and a `plot_*` function that draws it and returns the path of the PNG (`canvas` holds
what they share). `report` reads runs back from their folders and lays them side by side in one
self-contained HTML file, pictures inlined.

This sits above evaluation and training in the layers (it reads checkpoints and metrics) and
below the API and the CLI. matplotlib is imported inside the functions, with the
non-interactive Agg backend, so importing this package costs nothing and needs no display.
"""
