"""Event images from hits: reading hits from ROOT, rendering, the PNG codec and the hits2png converter;
imports no torch."""
