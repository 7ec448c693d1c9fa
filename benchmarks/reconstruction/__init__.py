"""3D reconstruction benchmarks (`g2vlm bench depth|pose|pointmap`): a protocol per task (depth.py, pose.py,
pointmap.py), the readers of each task's datasets (*_datasets.py, files.py, frame_maps.py), saved predictions of
other models (predictions.py) and the published numbers printed beside ours (published.py)."""
