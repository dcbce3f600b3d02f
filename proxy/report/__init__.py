"""The shadow report: the model and its renderers (terminal, JSON, Markdown, HTML)."""
