"""Seed 001's Celery app, as the article writes it: Redis broker and result backend.

Run with the default prefork pool: `celery -A worker.celery_app worker --loglevel=info`.
The task sleeps as the article's does; the benchmark sets the sleep to its workload's
(SKELETON_SLEEP_SECONDS). `task_acks_late` is on, as the article advises.
"""

import os
import time

from celery import Celery

celery_app = Celery(
    "worker",
    broker=os.getenv("REDIS_URL", "redis://localhost:6379/0"),
    backend=os.getenv("REDIS_URL", "redis://localhost:6379/0"),
)
celery_app.conf.task_acks_late = True
celery_app.conf.result_expires = 3600

SLEEP_SECONDS = float(os.getenv("SKELETON_SLEEP_SECONDS", "5"))


@celery_app.task(name="run_inference")
def run_inference(data: dict) -> dict:
    # In a real scenario, load the model globally to keep it in memory
    time.sleep(SLEEP_SECONDS)  # Simulating heavy ML work
    return {"prediction": "success", "score": 0.99}
