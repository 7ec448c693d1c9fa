"""g2vlm.callbacks: Lightning callbacks (loss-outlier clipping, preemption, visualisation, ...)."""
