"""The SQL surface: each SQL function declared once in a registry, the TEMP macros that give
them named arguments, the Python UDFs behind them and their argument checks. No torch at import.
"""
