"""Training losses: the G²VLM geometry loss (fp32, outside autocast) and the text loss."""
