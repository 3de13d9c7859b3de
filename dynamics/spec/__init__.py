"""The run spec: the pydantic model, its checks, loading/validation, object names and the chart schema."""
