"""The wire between probe, supervisor and console: messages, framing, authentication.

Imports neither Textual nor Rich nor torch: both halves of the project use it.
"""
