"""`cnnclf serve`: a local web page and a REST API that keep one model loaded and warm.

app.py       the ASGI app (FastAPI): routes, errors, token, the model card
batcher.py   micro-batching: concurrent requests share one model call
uploads.py   request bodies read in memory under --max-upload-mb
server.py    uvicorn: binding, workers, a clean stop on SIGTERM/Ctrl-C
static/      the web page (no external scripts, fonts or CDNs: it works offline)
"""
