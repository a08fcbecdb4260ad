"""Prebuilt, compiled graphs for ``langgraph.json`` (``langgraph dev`` serves them)."""
