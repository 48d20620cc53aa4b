"""Seed 001's FastAPI gateway, as the article writes it: POST /predict → task.delay()."""

from celery.result import AsyncResult
from fastapi import FastAPI
from worker import run_inference

app = FastAPI()


@app.post("/predict", status_code=202)
async def predict(payload: dict) -> dict:
    task = run_inference.delay(payload)
    return {"task_id": task.id}


@app.get("/result/{task_id}")
async def get_result(task_id: str) -> dict:
    result = AsyncResult(task_id)
    return {
        "task_id": task_id,
        "status": result.status,
        "result": result.result if result.ready() else None,
    }
