"""The 2017 supervised patch study: is there a TC / AR / weather front in this centred, cropped patch?"""
