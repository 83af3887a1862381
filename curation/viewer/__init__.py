"""What the dashboard reads, and the command that serves it."""
