"""The probe: everything that runs inside the training process.

Imports neither Textual nor Rich (a test enforces it), never raises into user code, and blocks
the training thread in one place only: the pause gate at a step boundary.
"""
