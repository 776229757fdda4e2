"""Thin HTTP routes, one module per resource: parse, call one service function, reply."""
