"""Task heads that read mlcodec latents (``mlcodec.tasks``); see the task-heads issue."""
