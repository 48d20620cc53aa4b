"""inferq's benchmark harness: `python -m bench [--quick|--smoke] [--only S1,S3]`.

Scenarios (each figure beside a baseline measured in the same run):

* S1 gateway overhead: `/v1/chat/completions` through inferq (queue included) vs the
  mock upstream called directly vs the LiteLLM proxy; open loop at fixed rates.
* S2 I/O-bound throughput: a burst of `sim` jobs at 2 s per call through one API and
  one worker process, vs seed 001's FastAPI + Celery skeleton.
* S3 submit path: `POST /v1/jobs` at 32 concurrent clients vs the skeleton's `/predict`.
* S4 local model: gemma-3-270m through inferq's SSE vs bare llama-cpp-python.
* S5 memory over time: RSS of the API and the worker while many `sim` jobs pass.

Baselines live in `bench/baselines/`; the mock upstream is `bench/upstream.py`; the load
generator (open loop, latency from the intended send time) is `bench/loadgen.py`.
"""
