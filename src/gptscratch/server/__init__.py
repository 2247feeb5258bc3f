"""The HTTP server: a model behind an OpenAI-compatible API (`gptscratch serve`).

`app`'s routes hand requests to `completions` (checked by `schemas`, chats rendered by
`chat_template`), whose rows `batching` queues for the decoding engine; `responses` and
`errors` give OpenAI's shapes back, and `playground` serves the page at `/`. Needs the `serve`
extra (fastapi, uvicorn), which `gptscratch.api.serve` checks.
"""
