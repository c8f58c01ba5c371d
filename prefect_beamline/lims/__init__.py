"""lims"""
