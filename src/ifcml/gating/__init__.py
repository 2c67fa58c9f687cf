"""Gating: GatingML 2.0 strategies and FlowJo workspaces applied to cells tables (through
FlowKit), and FCS files of those tables for cytometrists' own tools."""
