"""mmroute: route each text+image LLM query to the model that answers it best for the money."""

__version__ = "0.1.0"
