"""The HTTP runtime every service shares: bodies read in time, JSON in and out, bounded replies,
loop lag, and the process runner."""
