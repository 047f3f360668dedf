"""Masking patterns and algorithms: pure functions over values, no I/O.

``algorithms`` says how a value is masked (redaction, partial, fixed, NULL, keyed tokens);
``patterns`` pairs an algorithm with what it applies to (e-mail, phone numbers, resident
registration numbers, cards...). Which columns get which pattern is the policy's business;
applying a plan to rows as they stream is ``proxy/masking.py``.
"""
