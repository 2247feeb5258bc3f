"""Pictures of a model and its training as PNG files, and runs side by side in an HTML report.

One module per picture, each with a function that computes plain arrays (for tests and
notebooks) and a `plot_*` that draws them; `canvas` holds what they share. matplotlib is
imported inside the functions (Agg backend): importing this package needs no display.
"""
