"""Jobs: their schemas, their persistence and their claims by workers."""
