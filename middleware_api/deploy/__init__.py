"""Deployment to AWS: the Lambda zip builder (`package`) and the CloudFormation template (`template.yaml`).

Nothing here runs in Lambda: the zip leaves this package out, like the endpoint worker.
"""
