"""`cnnclf serve`: a local web page and a REST API that keep one model loaded and warm.

app.py       the ASGI app (FastAPI): its routes
settings.py  ServeSettings (the CLI's options) and the request limits
service.py   the loaded model, its decoding pool, batcher, warm-up and model card
requests.py  /predict's options and TF-Serving instances, checked
errors.py    every error as {"error": ...} with its status; the bearer-token check
heatmap.py   /explain's Grad-CAM overlay PNG
batcher.py   micro-batching: concurrent requests share one model call
uploads.py   request bodies read in memory under --max-upload-mb
budget.py    the bound on request bodies held in memory at once (--max-bodies-mb)
json_shape.py  a JSON body's depth and size, counted before it is parsed
memory.py    returning freed memory to the system after a burst of large bodies
hosts.py     the Host and Origin allowlists (DNS rebinding, cross-site requests)
admission.py  --max-concurrent-requests: a 503 past it, health checks exempt
connections.py  uvicorn's protocol with header, body and keep-alive deadlines and a
             connection cap sized to the open-file limit
server.py    uvicorn: binding, workers, a clean stop on SIGTERM/Ctrl-C
static/      the web page (no external scripts, fonts or CDNs: it works offline)
"""
