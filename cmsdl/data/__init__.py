"""Data formats, feature builders and LightningDataModules."""
