"""The client side: the gateway's live state, the client connection, forwarding rules, the listener."""
