from setuptools import find_packages, setup

setup(
    name="marconi",
    version="0.1.0",
    description="A multi-tenant message bus with an HTTP API, on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*", "bench", "bench.*"])
    + ["twisted.plugins"],
    # Packages live at the top of the project.  Saying so explicitly makes
    # an editable install (pip install -e .) put the project directory on
    # sys.path, which is how twistd finds twisted/plugins/marconi_plugin.py;
    # without it setuptools installs an import hook that Twisted's plugin
    # discovery cannot see.
    package_dir={"": "."},
    # The console's page, script and style ship in the wheel.
    package_data={"marconi.console": ["static/*"]},
    install_requires=[
        "twisted[tls]>=24.7",
        "klein>=24.8",
        "treq>=24.9",
        "zope.interface>=6",
        "pyopenssl>=24",
        "service-identity>=24",
        "cryptography>=42",
        "werkzeug>=3",
        "jcs>=0.2.1",
        "defusedxml>=0.7",
    ],
    extras_require={
        "redis": ["txredisapi>=1.4.10", "hiredis>=2"],
        "mongodb": ["txmongo>=23"],
        "prometheus": ["prometheus-client>=0.20"],
        "websockets": ["autobahn>=24.4"],
        "test": [
            "autobahn>=24.4",
            "prometheus-client>=0.20",
            "schemathesis>=4.32",
            "hypothesis>=6",
            "lxml>=5",
            "python-zaqarclient>=2",
            "txredisapi>=1.4.10",
            "hiredis>=2",
            "txmongo>=23",
            "secantusdb>=0.7.0b3",
            "selenium>=4.20",
            "mypy>=1.10",
            "mypy-zope>=1.0.5",
        ],
    },
    entry_points={
        "console_scripts": ["marconi = marconi.client.cli:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
