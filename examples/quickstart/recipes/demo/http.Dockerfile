# The page the demo's web service serves: it exists only in this image.
FROM debian-base
RUN mkdir -p /srv/www && echo 'Hello from a Charliecloud container built by stackctl in a Slurm job' > /srv/www/index.html
