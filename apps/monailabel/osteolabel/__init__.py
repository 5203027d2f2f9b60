"""osteoscreen's MONAI Label app: the tasks (lib), the ASGI wrapper and the server launcher.

Runs in its own environment (``make label-venv``: monailabel 0.8.5, torch 2.14.1); everything
about vertebrae, models and training is imported from the osteoscreen package.
"""
