"""Kernel and process effects (nftables, processes, netns); the only place that touches them."""
