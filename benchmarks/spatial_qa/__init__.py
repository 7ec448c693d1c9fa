"""Spatial-QA benchmarks: SPAR-Bench scoring of a checkpoint or of saved answers (`g2vlm bench spar`:
spar_cli.py, rules in spar.py) and of saved MindCube / OmniSpatial answers (`g2vlm bench mindcube|omnispatial`:
saved_answers_cli.py); the answer files both read: answers.py."""
