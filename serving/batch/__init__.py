"""`rnnmt batch`: streamed, resumable translation of files, as a client of servers or of an in-process
translator (never of the server's code)."""
