"""OpenAI batches on the job queue: validation, fan-out to jobs, results, recovery."""
