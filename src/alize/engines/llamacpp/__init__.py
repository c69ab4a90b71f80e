"""llama.cpp through xllamacpp, one worker process per loaded deployment."""
