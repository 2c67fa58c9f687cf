"""Readers of IFC sources and the CellStore they are ingested into."""
