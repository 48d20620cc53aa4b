"""Signed webhooks (Standard Webhooks): a job's terminal event POSTed to its URL."""
