"""Reliability tests (issue 5): graphscope survives every real autograd graph, leaks nothing, changes nothing."""
