"""Providers: LangChain chat models behind one streaming interface, and the registry.

Nothing is imported here: `inferq.providers.base` is needed by the job schemas (and so
by every CLI command), and importing every SDK with it (anthropic, openai, llama.cpp)
took seconds. Import the module you need: `inferq.providers.registry` knows them all.
"""
