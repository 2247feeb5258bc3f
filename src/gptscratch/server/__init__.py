"""The HTTP server: a model behind an OpenAI-compatible API (`gptscratch serve`).

- `app`: the FastAPI application, its routes, the API-key check, and running it (uvicorn);
- `completions`: the /v1/completions and /v1/chat/completions endpoints;
- `schemas`: the request bodies and the checks on their values;
- `chat_template`: chat messages rendered as a play script for a base model;
- `jobs`: one request's rows in the engine, and their events back to the request;
- `engine`: the batching engine (one thread, continuous batching) over `model.decoding`;
- `rows`: what a row asks for, reports and keeps;
- `responses`: OpenAI's response and streaming shapes;
- `errors`: OpenAI-shaped errors;
- `playground`: the page at `/` (`static/playground.html`) and its two native routes.

Needs the `serve` extra (fastapi, uvicorn); `gptscratch.api.serve` checks it is installed.
"""
