"""Procedural synthetic scenes: textured rooms with objects, exact depth, cameras and annotations."""
