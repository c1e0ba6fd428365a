"""Sample content for the demo (`make run`): documents, flow definitions and sample agents."""
