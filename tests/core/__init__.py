"""Core behaviour tests of streaq (every test on asyncio and trio, real Redis)."""
