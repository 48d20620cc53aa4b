"""OpenAI's API shapes: request schemas that become jobs, and jobs rendered as responses."""
