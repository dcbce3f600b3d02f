"""`strangler run`: embedded databases and the local processes of the whole system."""
