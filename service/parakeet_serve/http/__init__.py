"""The OpenAI-compatible HTTP front end: convert the request, call the core, convert the result."""
