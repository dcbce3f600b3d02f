"""The post event stream and the WebSocket (docs/API.md, Events)."""
