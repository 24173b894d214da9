"""The daemon loop: Docker events wake it, a periodic resync and due times drive it."""
