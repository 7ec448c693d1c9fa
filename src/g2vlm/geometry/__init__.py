"""Pure tensor geometry: SE(3), projection, rotations, alignment solvers, normals. fp32 by construction."""
